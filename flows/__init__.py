"""The flow engine and its steps. Imports only `bridge`; never an adapter."""
