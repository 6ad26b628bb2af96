"""Flower clients (installed as ``fedkd.clients``): what a client does with each message
(:mod:`fedkd.clients.handlers`) and its local training (:mod:`fedkd.clients.train`)."""
