"""The hub's service side over AMQP 1.0: claims-based security ($cbs), the Event Hubs-compatible
built-in endpoint (telemetry), C2D send (/messages/devicebound) and feedback.

    config.py    the event hub's fixed settings (name, partitions, consumer groups) and policies
    rules.py     pure: partition of a device, receiver filters, token claims -> rights
    wire.py      pure: the bytes the front handles itself (SASL, padding proton's frames)
    server.py    asyncio TLS listener: SASL, then a proton engine per connection
    endpoints.py the proton event handler: $cbs, $management, receivers, C2D, feedback
"""
