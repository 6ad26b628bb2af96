"""Flower ``ClientApp`` of fedkd: local training on one partition (see :mod:`clients.app`)."""
