"""Teachers: the protocol, the registry of kinds, and one module per adapter."""

from .base import BuildContext, Teacher, TeacherConfig, register_teacher, teacher_class, teacher_kinds

__all__ = [
    "BuildContext",
    "Teacher",
    "TeacherConfig",
    "register_teacher",
    "teacher_class",
    "teacher_kinds",
]
