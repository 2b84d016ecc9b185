"""Analytics queries over the ClickHouse tables the attribution dataflow writes (issue #6)."""
