"""Open Badges 3.0 ``OpenBadgeCredential``s for a course, and what one states in plain words.

The credential follows the 1EdTech Open Badges 3.0 data model on the W3C Verifiable Credentials
Data Model 2.0 (https://www.imsglobal.org/spec/ob/v3p0/): the issuer ``Profile``, an
``AchievementSubject`` naming the learner, the course as an ``Achievement`` (title, version,
criteria, alignment to the MITRE ATLAS ids its lessons cover), one ``Result`` per lesson plus the
overall score, and ``Evidence`` pointing at each graded notebook by its SHA-256 digest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labkit.atlas import MITIGATIONS, TECHNIQUES
from labkit.course.manifest import Course

__all__ = ["CONTEXT", "Evidence", "Statement", "achievement", "build_credential", "statement"]

CONTEXT = [
    "https://www.w3.org/ns/credentials/v2",
    "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
]
TYPES = ["VerifiableCredential", "OpenBadgeCredential"]


@dataclass(frozen=True)
class Evidence:
    """A graded submission, named by the SHA-256 digest of the notebook that was graded."""

    lesson: str  # slug
    file: str
    sha256: str  # hex

    @classmethod
    def of_file(cls, lesson: str, name: str, data: bytes) -> Evidence:
        return cls(lesson, name, hashlib.sha256(data).hexdigest())

    def as_json(self) -> dict[str, Any]:
        digest = urlsafe_b64encode(bytes.fromhex(self.sha256)).decode().rstrip("=")
        return {
            # RFC 6920 "named information": the URI is the digest, so it names exactly one file.
            "id": f"ni:///sha-256;{digest}",
            "type": ["Evidence"],
            "name": f"Graded submission for lesson {self.lesson}",
            "description": f"SHA-256 {self.sha256} of the notebook {self.file} that the autograder scored",
            "genre": "Jupyter notebook",
        }


def _atlas_name(atlas_id: str) -> str:
    if atlas_id in TECHNIQUES:
        return TECHNIQUES[atlas_id].name
    return MITIGATIONS.get(atlas_id, atlas_id)


def _atlas_url(atlas_id: str) -> str:
    kind = "mitigations" if atlas_id.startswith("AML.M") else "techniques"
    return f"https://atlas.mitre.org/{kind}/{atlas_id}"


def _lesson_result_id(course: Course, slug: str) -> str:
    return f"urn:labkit:{course.course_id}:{course.version}:result:{slug}"


def achievement(course: Course) -> dict[str, Any]:
    """The course as an Open Badges ``Achievement``: what a learner who passes has achieved."""
    policy = course.certification
    ready = course.ready_lessons
    required = [ls for ls in ready if ls.id in policy.required_lessons]
    criteria = (
        f"Complete the {len(ready)} lessons of {course.title} (version {course.version}), each "
        f"graded by an autograder in a sandbox, with an overall score of at least "
        f"{policy.pass_mark:.0%} of all points and at least {policy.min_per_lesson:.0%} in "
        + (
            "every lesson."
            if len(required) == len(ready)
            else f"lessons {', '.join(ls.slug for ls in required)}."
        )
    )
    atlas = sorted({a for ls in ready for a in ls.atlas})
    return {
        "id": f"urn:labkit:achievement:{course.course_id}:{course.version}",
        "type": ["Achievement"],
        "achievementType": "Certificate",
        "name": course.title,
        "description": f"Certificate of completion of the course {course.title} ({course.course_id}).",
        "criteria": {"narrative": criteria},
        "version": course.version,
        "tag": sorted({c for ls in ready for c in ls.concepts}),
        "alignment": [
            {
                "type": ["Alignment"],
                "targetName": _atlas_name(a),
                "targetUrl": _atlas_url(a),
                "targetCode": a,
                "targetFramework": "MITRE ATLAS",
            }
            for a in atlas
        ],
        "resultDescription": [
            {
                "id": _lesson_result_id(course, "overall"),
                "type": ["ResultDescription"],
                "name": "Overall score",
                "resultType": "Percent",
                "requiredValue": f"{100 * policy.pass_mark:.1f}",
            },
            *[
                {
                    "id": _lesson_result_id(course, ls.slug),
                    "type": ["ResultDescription"],
                    "name": f"Lesson {ls.id}: {ls.title}",
                    "resultType": "Percent",
                }
                for ls in ready
            ],
        ],
    }


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_credential(
    course: Course,
    *,
    issuer: Mapping[str, Any],
    learner: str,
    score: float,
    lessons: Mapping[str, float],
    evidence: Sequence[Evidence] = (),
    issued: dt.datetime,
    valid_until: dt.datetime | None = None,
    status: Mapping[str, Any] | None = None,
    credential_id: str | None = None,
) -> dict[str, Any]:
    """An unsigned ``OpenBadgeCredential`` for ``learner``.

    Parameters
    ----------
    issuer:
        The issuer's Open Badges ``Profile`` (``id`` is its did:key).
    score, lessons:
        The overall fraction and each ready lesson's fraction (by slug), in [0, 1].
    evidence:
        The graded submissions, one per lesson that was handed in.
    issued, valid_until:
        ``validFrom`` (and ``awardedDate``); ``validUntil`` when the credential expires.
    status:
        A ``BitstringStatusListEntry`` (see :func:`labkit.course.credentials.status.entry`).
    """
    if issued.tzinfo is None:
        raise ValueError("issued: expected a timezone-aware datetime (e.g. datetime.now(datetime.UTC))")
    if not learner.strip():
        raise ValueError("learner: expected a non-empty name")
    results = [
        {
            "type": ["Result"],
            "resultDescription": _lesson_result_id(course, "overall"),
            "value": f"{100 * score:.1f}",
        }
    ]
    for ls in course.ready_lessons:
        results.append(
            {
                "type": ["Result"],
                "resultDescription": _lesson_result_id(course, ls.slug),
                "value": f"{100 * lessons.get(ls.slug, 0.0):.1f}",
            }
        )
    credential: dict[str, Any] = {
        "@context": list(CONTEXT),
        "id": credential_id or f"urn:uuid:{uuid.uuid4()}",
        "type": list(TYPES),
        "name": f"{course.title}: certificate of completion",
        "issuer": dict(issuer),
        "validFrom": _when(issued),
        "awardedDate": _when(issued),
        "credentialSubject": {
            "type": ["AchievementSubject"],
            # Open Badges names the learner through an IdentityObject; plain (not hashed) here so
            # that the printed certificate and the credential can be compared by anyone.
            "identifier": [
                {
                    "type": "IdentityObject",
                    "identityType": "name",
                    "hashed": False,
                    "identityHash": learner,
                }
            ],
            "achievement": achievement(course),
            "result": results,
        },
    }
    if evidence:
        credential["evidence"] = [e.as_json() for e in evidence]
    if valid_until is not None:
        credential["validUntil"] = _when(valid_until)
    if status is not None:
        credential["credentialStatus"] = dict(status)
    return credential


@dataclass(frozen=True)
class Statement:
    """What a credential states, in the words a certificate page prints."""

    learner: str
    course: str  # course_id
    title: str
    version: str
    score: str  # overall percent, one decimal
    date: str  # ISO date of validFrom
    issuer: str  # issuer name
    issuer_id: str
    credential_id: str
    lessons: tuple[tuple[str, str], ...]  # (lesson name, percent)
    evidence: int  # number of submissions named by digest
    valid_until: str | None


def statement(credential: Mapping[str, Any]) -> Statement:
    """Read what ``credential`` states; ``ValueError`` naming the field when one is missing."""
    try:
        subject = credential["credentialSubject"]
        ach = subject["achievement"]
        learner = next(i["identityHash"] for i in subject["identifier"] if i.get("identityType") == "name")
        names = {d["id"]: d["name"] for d in ach.get("resultDescription", [])}
        overall = ""
        lessons = []
        for r in subject.get("result", []):
            if str(r["resultDescription"]).endswith(":result:overall"):
                overall = str(r["value"])
            else:
                lessons.append((names.get(r["resultDescription"], r["resultDescription"]), str(r["value"])))
        course_id = str(ach["id"]).split(":")[3]
        issuer = credential["issuer"]
        return Statement(
            learner=learner,
            course=course_id,
            title=ach["name"],
            version=ach.get("version", ""),
            score=overall,
            date=str(credential["validFrom"])[:10],
            issuer=issuer.get("name", issuer.get("id", "")) if isinstance(issuer, Mapping) else str(issuer),
            issuer_id=issuer.get("id", "") if isinstance(issuer, Mapping) else str(issuer),
            credential_id=credential["id"],
            lessons=tuple(lessons),
            evidence=len(credential.get("evidence", [])),
            valid_until=credential.get("validUntil"),
        )
    except (KeyError, StopIteration, TypeError, IndexError, AttributeError) as err:
        raise ValueError(
            f"the credential lacks a field labkit reads ({err!s}); not a labkit credential"
        ) from None
