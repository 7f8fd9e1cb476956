"""asyncio transports, the rate cap and the target scope: how bytes reach a target, and which targets they may reach."""
