"""Packaging for minddpm, read from settings.ini (the nbdev 2 template, without pkg_resources)."""
from configparser import ConfigParser
import shlex
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

meta_keys = 'version description keywords author author_email'.split()
expected = meta_keys + 'lib_name user branch license status min_python audience language'.split()
for key in expected: assert key in cfg, f'settings.ini is missing the setting: {key}'
meta = {key: cfg[key] for key in meta_keys}

licenses = {
    'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License'),
    'mit': ('MIT License', 'OSI Approved :: MIT License'),
    'bsd3': ('BSD License', 'OSI Approved :: BSD License'),
}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature']
py_versions = '3.10 3.11 3.12 3.13 3.14'.split()
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
min_python = cfg['min_python']

def reqs(key): return shlex.split(cfg.get(key, ''))

lib = cfg['lib_name']
# The bundled dataset and checkpoint live in the repo's top-level data/ and ship once, inside the
# package, as `minddpm.assets` (read with importlib.resources); download caches in data/ stay out.
assets = f'{lib}.assets'

setuptools.setup(
    name=lib,
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status']) - 1],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + [f'Programming Language :: Python :: {v}' for v in py_versions[py_versions.index(min_python):]]
                + ([f'License :: {lic[1]}'] if lic[1] else []),
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=[lib, f'{lib}.*']) + [assets],
    package_dir={assets: 'data'},
    package_data={assets: ['*.pt', '*.md']},
    include_package_data=False,
    install_requires=reqs('requirements'),
    extras_require={'dev': reqs('dev_requirements'), 'wandb': reqs('wandb_requirements'),
                    'fid': reqs('fid_requirements'), 'demo': reqs('demo_requirements'),
                    'onnx': reqs('onnx_requirements')},
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    **meta)
