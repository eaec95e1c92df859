"""Reading runs back: record.py (the one `Run` record), reader.py (the one run-folder reader),
mongo.py (runs from MongoDB), query.py (--where, --sort, groups), sync.py (folders into MongoDB).
Never imports train/ or record/."""
