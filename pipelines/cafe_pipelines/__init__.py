"""cafe_pipelines: Ray Data stages (one callable class per file) and the jobs that compose them."""
