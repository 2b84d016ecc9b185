"""Live updates: `/v1/live` (Server-Sent Events) relays the dataflow's Redis fan-out."""
