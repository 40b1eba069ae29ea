"""Job tracking: the producer API, the worker-side hooks and the stores."""
