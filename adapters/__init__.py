"""Channel adapters. Each implements `bridge.adapter.Adapter`; imports only `bridge`."""
