"""The parent process: the arbiter loop, the pool of children, releases and health."""
