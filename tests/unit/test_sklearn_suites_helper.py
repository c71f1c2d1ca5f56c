"""The suite runner's import swap (tests/sklearn_suites.py) inserts its line where it must."""

from __future__ import annotations

import pytest
from sklearn_suites import insert_after_imports, prepare_suite

SOURCE = '''"""Doc."""

import os
from a import (
    b,
    c,
)

X = 1
import late
'''


def test_line_goes_after_the_leading_imports():
    out = insert_after_imports(SOURCE, "from hpcml import b")
    lines = out.splitlines()
    assert lines[lines.index("    c,") + 2] == "from hpcml import b"
    assert lines.index("from hpcml import b") < lines.index("X = 1") < lines.index("import late")
    assert out.replace("from hpcml import b\n", "") == SOURCE


def test_a_file_without_leading_imports_is_refused():
    with pytest.raises(ValueError, match="no leading imports"):
        insert_after_imports('"""Doc."""\nX = 1\n', "from hpcml import b")


def test_prepared_copy_is_sklearns_file_plus_one_line(tmp_path):
    import sklearn.model_selection.tests.test_search as original

    swap = "from hpcml import GridSearchCV, RandomizedSearchCV"
    path = prepare_suite(tmp_path, "model_selection/tests/test_search.py", swap)
    with open(original.__file__) as fh:
        source = fh.read()
    assert path.read_text().replace(swap + "\n", "", 1) == source
    assert 'pytest_plugins = ["sklearn.conftest"]' in (tmp_path / "conftest.py").read_text()
