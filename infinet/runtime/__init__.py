"""Running a plan: backends, batching and data handling."""
