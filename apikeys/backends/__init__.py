"""Built-in backends. Import one module directly, or let
:func:`apikeys.create_key_manager` choose by URL: each module needs its extra
(``apikeys[sqlalchemy]``, ``apikeys[clerk]``) and says so when it is missing.
"""
