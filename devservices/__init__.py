"""Local development services: Kafka (from Maven jars), PostgreSQL and Redis (from Debian packages).

Used by `./run`, the tests and the benchmarks to install and start what is missing; never
imported by the running app, which only reads the addresses from its settings.
"""
