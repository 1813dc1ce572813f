"""Everything that consumes a stream: the command processor, the projector (Kafka consumers)
and the Channels websocket consumer, with the worker loop they share."""
