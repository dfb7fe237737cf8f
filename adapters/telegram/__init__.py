"""Telegram for customers: python-telegram-bot, long polling with an offset we own, or a
webhook. Nothing heavy is imported here; the registry imports `config` and `adapter`."""
