"""``sqs-supervisor``: a thin command line over the engine, one module per verb group."""
