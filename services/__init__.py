"""The application layer bot code calls: StateService, its errors, config and the container."""
