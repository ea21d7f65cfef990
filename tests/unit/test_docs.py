from pathlib import Path

from s3mount.docs import (
    BEGIN,
    END,
    MAN_BEGIN,
    MAN_END,
    main,
    options_markdown,
    render_man,
    render_readme,
)
from s3mount.options import OPTIONS, Status

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_option_list_matches_the_option_table():
    text = README.read_text()
    assert render_readme(text) == text, "run: python -m s3mount.docs (README.md is stale)"


def test_every_option_is_documented():
    generated = options_markdown()
    for option in OPTIONS:
        assert f"`{option.name}`" in generated, option.name
    for option in OPTIONS:
        if option.status is Status.UNSUPPORTED:
            assert option.note in generated


def test_render_replaces_only_the_marked_block():
    text = f"before\n{BEGIN}\nstale\n{END}\nafter\n"
    rendered = render_readme(text)
    assert rendered.startswith(f"before\n{BEGIN}\n") and rendered.endswith(f"{END}\nafter\n")
    assert "stale" not in rendered


def test_main_rewrites_the_readme_and_the_man_page(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    man = tmp_path / "s3mount.1"
    readme.write_text(f"intro\n{BEGIN}\nstale\n{END}\nrest\n")
    man.write_text(f".TH S3MOUNT 1\n{MAN_BEGIN}\nstale\n{MAN_END}\n.SH FILES\n")

    assert main(["--check", str(readme), str(man)]) == 1
    assert "stale" in readme.read_text() and "stale" in man.read_text()

    assert main([str(readme), str(man)]) == 0
    assert readme.read_text() == render_readme(readme.read_text())
    assert man.read_text() == render_man(man.read_text())
    assert "stale" not in readme.read_text() + man.read_text()
    assert main(["--check", str(readme), str(man)]) == 0
