"""cafe_cli: the `cafe` command. The top layer: it may import every package; subcommands import lazily."""
