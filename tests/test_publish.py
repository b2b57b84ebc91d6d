"""`ctcbook publish DIR` copies a built book for a static host, refuses to overwrite anything else."""
import pytest

from ctcbook.book.cli import main
from ctcbook.book.publish import publish


@pytest.fixture
def html(tmp_path):
    built = tmp_path / "_build" / "html"
    (built / "chapters").mkdir(parents=True)
    (built / "index.html").write_text("<html>book</html>")
    (built / "chapters" / "01_tradeoff.html").write_text("<html>chapter</html>")
    (built / ".buildinfo").write_text("sphinx")
    return built


def test_publish_copies_the_book_and_replaces_an_earlier_publish(html, tmp_path):
    dest = publish(tmp_path / "site", html)
    assert (dest / "chapters" / "01_tradeoff.html").read_text() == "<html>chapter</html>"
    assert (dest / ".nojekyll").exists() and not (dest / ".buildinfo").exists()
    (html / "index.html").write_text("<html>book v2</html>")
    (html / "chapters" / "01_tradeoff.html").unlink()
    publish(dest, html)
    assert (dest / "index.html").read_text() == "<html>book v2</html>"
    assert not (dest / "chapters" / "01_tradeoff.html").exists()  # a replaced publish keeps no stale page
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".site")] == []


def test_publish_refuses_a_folder_with_other_content(html, tmp_path):
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "thesis.tex").write_text("keep me")
    with pytest.raises(ValueError, match=r"precious is not empty and holds no earlier publish"):
        publish(dest, html)
    assert (dest / "thesis.tex").read_text() == "keep me"


def test_cli_publish_without_a_built_book_exits_2(tmp_path, capsys):
    assert main(["publish", str(tmp_path / "site"), "--html", str(tmp_path / "nothing")]) == 2
    assert "no built book at" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


def test_pages_workflow_builds_with_warnings_as_errors_and_deploys_with_the_official_actions():
    import yaml

    from ctcbook.book.runner import REPO

    flow = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    assert flow[True]["push"]["branches"] == ["main"]  # YAML reads the key `on` as True
    assert (flow["permissions"]["pages"], flow["permissions"]["id-token"]) == ("write", "write")
    steps = [s for job in flow["jobs"].values() for s in job["steps"]]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert "actions/upload-pages-artifact" in uses and "actions/deploy-pages" in uses
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    build = " ".join(s.get("run", "") for s in steps)
    assert "make book" in build  # the Makefile's book target builds with --warnings-as-errors (-W)
    assert "--warnings-as-errors" in (REPO / "Makefile").read_text().split("\nbook:")[1].split("\n\n")[0]
