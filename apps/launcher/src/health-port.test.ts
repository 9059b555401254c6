import { healthPortOf } from './stack';

test('each worker of a stack gets its own health port from HEALTH_PORT; 0 and unset are passed on as they are', () => {
  expect([1, 2, 3].map((index) => healthPortOf('9464', index))).toEqual([{ HEALTH_PORT: '9464' }, { HEALTH_PORT: '9465' }, { HEALTH_PORT: '9466' }]);
  expect(healthPortOf('0', 2)).toEqual({});
  expect(healthPortOf(undefined, 2)).toEqual({});
  expect(healthPortOf('', 2)).toEqual({});
});
