"""Slack, the agents' side (slack-bolt). Import `adapters.slack.adapter` for the adapter;
this package import stays light so config validation does not load bolt."""
