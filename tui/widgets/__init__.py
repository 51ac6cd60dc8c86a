"""Widgets reused across screens: the loss chart, the token stream and the settings form."""
