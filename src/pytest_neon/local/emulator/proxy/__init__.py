"""The endpoints' listeners: each endpoint's ``host`` is a port of one proxy that ends TLS
and SCRAM (with channel binding) as Neon's proxy does, logs in to the real server as the
role, on the branch's real database, and relays the session."""
