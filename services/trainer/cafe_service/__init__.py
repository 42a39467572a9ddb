"""cafe_service: the training service, an HTTP job API over Ray with a persistent job store and schedules.

    cafe serve --root /data --token "$CAFE_SERVICE_TOKEN" [--db svc/service.db] [--slots 2]

Jobs are real `cafe` commands (data build, train run/launch, improve round, loop run, eval), each run
detached through a Ray task and recorded in SQLite; see cafe_service.app for the routes. Importing
this package loads neither torch nor ray (Ray is imported when the first job starts).
"""

from cafe_service.app import create_app
from cafe_service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
