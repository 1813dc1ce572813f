"""Live updates to the browser: what the projector pushes after a commit (`updates`), the Channels websocket
consumer that turns pushes into htmx fragments (`websocket`, served at `routing`), and the long-poll the
views fall back on (`updates.wait_for_command`). Apart from the Kafka workers in consumers/."""
