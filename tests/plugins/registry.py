"""Registry fixtures (the real docker-registry from Debian on 127.0.0.1)."""
