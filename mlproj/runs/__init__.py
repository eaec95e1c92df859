"""Reading runs back: the one run reader, queries, sync. Never imports train/ or record/."""
