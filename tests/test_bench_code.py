"""Each sweep row records the code that measured it; resume and comparison stay within one code."""

import pytest

from llmcodec import bench, codeid


def test_fingerprint_follows_contents_not_order_nor_the_version_module():
    a = {"x.py": b"a = 1\n", "sub/y.py": b"b = 2\n"}
    fp = codeid.fingerprint(a, "0.1.0")
    assert fp.startswith("0.1.0+") and len(fp) == len("0.1.0+") + 12
    assert codeid.fingerprint(dict(reversed(list(a.items()))), "0.1.0") == fp
    assert codeid.fingerprint({**a, "_version.py": b"v = 9\n"}, "0.1.0") == fp
    assert codeid.fingerprint({**a, "x.py": b"a = 2\n"}, "0.1.0") != fp
    assert codeid.fingerprint(a, "0.2.0") != fp


def test_code_id_of_a_package_tree(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "x.py").write_bytes(b"a = 1\n")
    (tmp_path / "sub" / "y.py").write_bytes(b"b = 2\n")
    before = codeid.code_id(tmp_path)
    assert before == codeid.fingerprint({"x.py": b"a = 1\n", "sub/y.py": b"b = 2\n"}, codeid.__version__)
    (tmp_path / "sub" / "y.py").write_bytes(b"b = 3\n")
    assert codeid.code_id(tmp_path) != before


def _row(codec, target, code, status="ok"):
    return {"model": "m", "scope": "s", "kind": "codec", "codec": codec, "profile": "default",
            "target": str(target), "code": code, "status": status}


def test_only_cells_of_the_same_code_count_as_done():
    rows = [_row("x265", 2.5, "old"), _row("vvc", 2.5, "new"), _row("aom", 2.5, "new", status="error"),
            _row("kvazaar", 3, "")]
    done = bench.done_points(rows, "new")
    assert done == {("m", "s", "codec", "vvc", "default", "2.5")}
    assert bench.done_points(rows, "old") == {("m", "s", "codec", "x265", "default", "2.5")}
    # the same point measured by two codes: both rows are kept, one per code
    both = bench.latest(rows + [_row("x265", 2.5, "new")])
    assert sorted(r["code"] for r in both if r["codec"] == "x265") == ["new", "old"]
    assert [r["codec"] for r in bench.of_code(both, "new")] == ["vvc", "aom", "x265"]


def test_a_csv_without_the_code_column_is_upgraded_in_place(tmp_path):
    path = tmp_path / "points.csv"
    old_cols = [c for c in bench.COLUMNS if c != "code"]
    path.write_text(",".join(old_cols) + "\n" + ",".join("x265" if c == "codec" else "1" for c in old_cols) + "\n")
    bench.append_point(path, {**{c: "1" for c in bench.COLUMNS}, "codec": "vvc", "code": "new"})
    rows = bench.read_points(path)
    assert path.read_text().splitlines()[0] == ",".join(bench.COLUMNS)
    assert [(r["codec"], r["code"]) for r in rows] == [("x265", ""), ("vvc", "new")]
    assert bench.done_points(rows, "new") == {bench.point_key(rows[1])}


def test_a_csv_with_unknown_columns_is_still_refused(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("model,scope,kind,codec,qp\n")
    with pytest.raises(ValueError, match="other columns"):
        bench.append_point(path, {c: "1" for c in bench.COLUMNS})


def test_a_declared_equal_code_resumes_the_cells_of_that_code():
    known = {"0.1.0+aaa", "0.1.0+bbb"}
    assert bench.filed_code("0.1.0+ccc", None, known) == "0.1.0+ccc"
    assert bench.filed_code("0.1.0+ccc", "0.1.0+aaa", known) == "0.1.0+aaa"
    with pytest.raises(ValueError, match="no cell of that code.*0.1.0\\+aaa, 0.1.0\\+bbb"):
        bench.filed_code("0.1.0+ccc", "0.1.0+typo", known)
