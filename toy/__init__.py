"""The toy world: a category file, its judge, a warm-up, the experiment and its report, built on public interfaces."""
