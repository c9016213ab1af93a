"""Devices of the home: the Devices panel, Add device (discovery, pairing), the roster of
enrolled devices."""
