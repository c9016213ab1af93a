"""The cluster as a local AI server: an OpenAI-compatible HTTP API over the model.

    server = ApiServer(tokenizer, runner, model_name, ServeConfig(port=8080)).start()
    ...
    server.stop()

`tpi-chat serve` (cli.py) opens the model the way `tpi-chat generate` does and runs an
ApiServer; the app can start and stop one from its engine thread over the model it has
loaded (server.py says how the two share it). Routes: app.py; request checks: schemas.py;
the one thread that runs the model and the queue in front of it: engine_worker.py.
"""
