"""Package metadata read from settings.ini (the nbdev 2 convention)."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
c = cfg["DEFAULT"]

setuptools.setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    author=c["author"],
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=setuptools.find_packages(include=["hac", "hac.*"]),
    # shipped data (taxonomy, class-name lists, concept maps): read with importlib.resources.files("hac") / "assets"
    package_data={"hac": ["assets/*"]},
    include_package_data=True,
    python_requires=">=" + c["min_python"],
    install_requires=c.get("requirements", "").split(),
    extras_require={"dev": c.get("dev_requirements", "").split()},
    entry_points={
        "console_scripts": c.get("console_scripts", "").split(),
        "nbdev": [f"{c['lib_path']}={c['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
