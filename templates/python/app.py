"""{{name}}: takes {"name": "..."} (optional), logs one line, and returns
{"greeting": "Hello, <name>!"}. Replace `run` with your skill's work.

componentize-py generates the `wit_world` package from ./wit (a copy of
skillbox's WIT package) when it builds the component; `skillbox build .` runs it.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import log
from wit_world.imports.types import SkillError_Failed, SkillError_InvalidInput


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        # `[input.schema]` in skill.toml already refused inputs of the wrong shape;
        # check anyway, so the skill is safe to call without it.
        try:
            args = json.loads(input)
        except json.JSONDecodeError as e:
            raise Err(SkillError_InvalidInput(f"the input is not JSON: {e}"))
        if not isinstance(args, dict):
            raise Err(SkillError_InvalidInput('expected {"name": "..."}'))
        name = args.get("name", "world")
        if not isinstance(name, str):
            raise Err(SkillError_InvalidInput("name must be a string"))

        if name == "":
            # When the work itself fails (an upstream error, nothing found), say so:
            # the caller gets this message as the skill's error (exit 1).
            raise Err(SkillError_Failed("there is nobody to greet"))

        log.log(log.Level.INFO, f"greeting {name}")
        return json.dumps({"greeting": f"Hello, {name}!"})
