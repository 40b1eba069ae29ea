"""The child process: receive, run handlers, settle, keep leases alive."""
