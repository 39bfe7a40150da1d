"""The built-in corpus ``python-docs``: the documentation strings of Python's standard library, text every machine
with Python has, so the demo needs no download and no shared folder. clidep.data reads it by that name."""

from __future__ import annotations

#: Standard-library modules whose documentation strings make the built-in corpus ``python-docs``:
#: text every machine with Python has, so the demo needs no download and no shared folder.
PYTHON_DOC_MODULES = (
    "abc argparse ast asyncio base64 bisect calendar cmd codecs collections colorsys concurrent.futures configparser "
    "contextlib copy csv dataclasses datetime decimal difflib dis doctest email enum filecmp fileinput fnmatch "
    "fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html html.parser http.client "
    "http.server imaplib importlib inspect io ipaddress itertools json logging lzma mailbox math mimetypes "
    "multiprocessing netrc numbers operator optparse os pathlib pdb pickle pkgutil platform plistlib poplib pprint "
    "profile pstats queue quopri random re sched secrets selectors shelve shlex shutil signal smtplib socket "
    "socketserver sqlite3 ssl stat statistics string struct subprocess tarfile tempfile textwrap threading "
    "timeit tokenize trace traceback turtle typing unittest urllib.parse urllib.request uuid warnings wave "
    "weakref xml.dom.minidom xml.etree.ElementTree zipfile zoneinfo"
).split()


def python_docs() -> tuple[list[str], list[str]]:
    """(train, valid) documentation strings of the standard library: one document per module, class,
    function or method with at least 200 characters of docs, every 20th held out, in a fixed order."""
    import importlib
    import inspect
    import warnings

    docs: list[str] = []
    seen: set[str] = set()  # by content: ids of discarded strings are reused by later ones
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PYTHON_DOC_MODULES:
            try:
                module = importlib.import_module(name)
            except Exception:  # a module missing from this build of Python (e.g. no _tkinter, no _ssl)
                continue
            objs = [module] + [
                obj
                for attr, obj in sorted(vars(module).items())
                if not attr.startswith("_")
                and (inspect.isclass(obj) or inspect.isfunction(obj))
                and getattr(obj, "__module__", "") == name
            ]
            objs += [
                m
                for c in objs
                if inspect.isclass(c)
                for a, m in sorted(vars(c).items())
                if not a.startswith("_") and inspect.isfunction(m)
            ]
            for obj in objs:
                doc = inspect.getdoc(obj)
                if doc and len(doc) >= 200 and doc not in seen:
                    seen.add(doc)
                    docs.append(doc.strip())
    return [d for i, d in enumerate(docs) if i % 20], [d for i, d in enumerate(docs) if i % 20 == 0]
