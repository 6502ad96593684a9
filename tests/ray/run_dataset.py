"""samfast-dataset as its command runs, with one injected failure when $CRASH_MARKER names a file
that does not exist yet: the first actor call creates it and kills its own process (os._exit), as a
crashed worker dies, so that Ray must restart the actor and run the batch again."""
import os
import sys

import samfast.dataset
import samfast.ray


class CrashOnce(samfast.ray.SegmentEverything):
    def __call__(self, batch):
        marker = os.environ.get("CRASH_MARKER")
        if marker:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(3)
        return super().__call__(batch)


samfast.ray.SegmentEverything = CrashOnce
sys.exit(samfast.dataset.main(sys.argv[1:]))
