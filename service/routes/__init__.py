"""HTTP routers, one module per resource; ``service.app.create_app`` includes them."""
