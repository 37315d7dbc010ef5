"""The watch: the event-log hub and the streams it feeds."""
