"""RabbitMQ plumbing shared by the API (publisher) and the worker (consumer).

``topology`` declares the queues both sides rely on; ``publisher`` sends jobs with publisher
confirms; ``errors`` is the small exception hierarchy pika's errors are translated into.
"""
