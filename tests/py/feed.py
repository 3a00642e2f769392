"""Parses an Atom feed with feedparser and prints what a subscriber sees, as JSON.

Usage: feed.py FILE. Exits 1 when feedparser reports the feed as malformed.
"""
import json
import sys

import feedparser

parsed = feedparser.parse(sys.argv[1])
if parsed.bozo:
    print(f"malformed feed: {parsed.bozo_exception}", file=sys.stderr)
    sys.exit(1)
print(json.dumps({
    "version": parsed.version,
    "id": parsed.feed.get("id"),
    "title": parsed.feed.get("title"),
    "updated": parsed.feed.get("updated"),
    "entries": [
        {
            "id": e.get("id"),
            "title": e.get("title"),
            "updated": e.get("updated"),
            "published": e.get("published"),
            "summary": e.get("summary"),
            "link": e.get("link"),
            "tags": [t.get("term") for t in e.get("tags", [])],
        }
        for e in parsed.entries
    ],
}))
