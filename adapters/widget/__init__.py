"""The web chat widget (customers) and the agent console (agents), served by one adapter."""
