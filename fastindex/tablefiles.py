"""ONE's two table files: their names, in the order they are written.  (Which folder
holds a command's tables is the root's to say: ``Root.tables_folder``.)"""

from __future__ import annotations

#: ONE's two cache tables, in the order they are written and renamed into place.
TABLE_FILES = ("sessions.pqt", "datasets.pqt")
SESSIONS_FILE, DATASETS_FILE = TABLE_FILES
