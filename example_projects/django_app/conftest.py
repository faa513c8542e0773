# The one line that runs this suite on a Neon branch (or on the local backend offline).
pytest_plugins = ["pytest_neon.contrib.django"]
