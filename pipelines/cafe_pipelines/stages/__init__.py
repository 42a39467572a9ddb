"""Ray Data stages of the build job: one callable class per file, each usable without Ray."""
