import { z } from 'zod';

/** Fields several step kinds declare the same way. */
export const StepId = z.string().regex(/^[a-z][a-z0-9_-]{0,31}$/, 'step ids are lower-case letters, digits, _ or -, up to 32');
export const Role = z.string().min(1).max(64);
export const Template = z.string().min(1).max(20_000);

/** The templates among a step's options that are set. */
export const templatesIn = (...templates: Array<string | undefined>): string[] => templates.filter((template): template is string => template !== undefined);
