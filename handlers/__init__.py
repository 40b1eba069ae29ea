"""Built-in handlers for sqs-supervisor bindings."""
