"""Signed pause signals: Ed25519 signing (signing.py), key loading (keys.py), publishing (publisher.py).

Agents only verify (app/client.py); only the guard and operators holding the private key sign.
"""
