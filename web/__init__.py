"""The web app: pages and htmx endpoints, forms, middleware, template tags and the admin.
Views read projections and send commands; they never write balances."""
