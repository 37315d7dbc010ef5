"""Storage: the store on Peewee, its schema, the database threads."""
