"""py-weather: a weather lookup with a bearer token the skill never sees.

Input: {"city": "Oslo", "base_url": "https://api.weather.example"} (base_url
optional: a local test server). Output: the weather service's JSON, as it
answered. The token is opened by name and handed to the host, which adds it
to the request; Python never holds its value.

Built with componentize-py against the world `skill` in ../../wit (see
../build-python.sh); the bindings (`wit_world`) are generated at build time.
"""

import json
import urllib.parse

import wit_world
from componentize_py_types import Err
from wit_world.imports import credentials, http, log
from wit_world.imports.types import SkillError_Failed, SkillError_InvalidInput

DEFAULT_BASE_URL = "https://api.weather.example"


def _invalid(message: str) -> Err:
    return Err(SkillError_InvalidInput(message))


def _failed(message: str) -> Err:
    return Err(SkillError_Failed(message))


def _host_error(what: str, err: Err) -> Err:
    # A host error is a variant case (Error_NotGranted, Error_HostNotAllowed, ...)
    # carrying a message for people; name the case and pass the message on.
    case = type(err.value).__name__.removeprefix("Error_")
    return _failed(f"{what}: {case}: {err.value.value}")


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        try:
            args = json.loads(input)
        except ValueError as e:
            raise _invalid(f"input is not JSON: {e}")
        if not isinstance(args, dict):
            raise _invalid("input must be a JSON object")
        city = args.get("city")
        if not isinstance(city, str) or not city:
            raise _invalid("`city` (a non-empty string) is required")
        base_url = args.get("base_url", DEFAULT_BASE_URL)
        if not isinstance(base_url, str):
            raise _invalid("`base_url` must be a string")
        unknown = sorted(set(args) - {"city", "base_url"})
        if unknown:
            raise _invalid(f"unknown field(s): {', '.join(unknown)}")

        try:
            token = credentials.open("weather")
        except Err as e:
            raise _host_error("cannot open credential `weather`", e)
        url = f"{base_url.rstrip('/')}/weather?city={urllib.parse.quote(city, safe='')}"
        request = http.Request(
            method="GET",
            url=url,
            headers=[("accept", "application/json"), ("user-agent", "skillbox-py-weather")],
            body=b"",
        )
        try:
            with token:
                response = http.send(request, token)
        except Err as e:
            raise _host_error("the weather request failed", e)
        if response.status != 200:
            body = response.body.decode("utf-8", "replace")[:500]
            raise _failed(f"the weather service answered {response.status}: {body}")
        try:
            weather = json.loads(response.body)
        except ValueError as e:
            raise _failed(f"the weather service's answer is not JSON: {e}")
        log.log(log.Level.INFO, f"weather for {city}")
        return json.dumps(weather)
