"""What Flower runs: the ``ServerApp`` (:mod:`~fedkd.apps.server_app`), the ``ClientApp``
(:mod:`~fedkd.apps.client_app`) and the one call into the simulation engine
(:mod:`~fedkd.apps.simulation`). The top of the library: nothing below imports it."""
