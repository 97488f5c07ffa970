"""The cloud side as an Azure client: connection strings, the Event Hubs-compatible endpoint
(azure-eventhub) and C2D (azure-iot-hub), usable against Azure and against the local hub alike."""
